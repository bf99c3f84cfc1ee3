"""The graph modality: one node-attributed graph per dataset (Cora-style node classification), full-batch
training of graph encoders (GCN, GAT) with DGI, GraphCL and GraphMAE, and node-level probes on the frozen
encoder."""
