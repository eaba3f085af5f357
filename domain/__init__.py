"""The NFS CSI driver's domain: its model (values, rules, errors, events) and, in usecases/, one use case per RPC."""
