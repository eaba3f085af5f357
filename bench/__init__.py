"""A CSI benchmark that drives any CSI driver over its socket and reports against measured floors."""
