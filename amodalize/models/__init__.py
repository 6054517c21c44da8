"""Networks: the UNet behind PCNet-M, and its input packing and checkpoint import."""
