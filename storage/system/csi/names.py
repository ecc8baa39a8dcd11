"""CSI names the node path needs without a driver: kept free of grpc so importing them costs nothing (PF41)."""

# Node annotation (as kubelet writes it): JSON {driver name: the driver's node id on that node}.
ANN_NODE_IDS = "csi.volume.kubernetes.io/nodeid"
# Node annotation (Stowage's stand-in for CSINode.spec.drivers[].topologyKeys): JSON {driver: [keys]}.
ANN_TOPOLOGY_KEYS = "stowage.io/csi-topology-keys"
