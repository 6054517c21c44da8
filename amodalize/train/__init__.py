"""PCNet-M training: the partial-completion samples and the optimisation loop."""
