"""The use cases: one per CSI RPC, named after it, over the ports; the layer above ports/."""
