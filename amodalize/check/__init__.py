"""The checking side: how good converted labels are, with or without amodal ground truth.

evaluate (ordering accuracy and amodal mIoU against ground truth), amodal_ap (COCO mask AP on
amodal masks), quality (what a file says of itself without ground truth), review (the least
sure edges and completions), report (one HTML page on a converted file), visualize (pictures of
masks and order), maskrcnn (train Mask R-CNN on converted labels: do they train a better model?).
"""
