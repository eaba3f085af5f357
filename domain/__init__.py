"""Use cases and rules of the NFS CSI driver; standard library only."""
