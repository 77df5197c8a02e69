"""RGP for tf_keras (Keras 2) models through TF-MOT: the adapter `prune_regular_graph` dispatches to, and the
TF-MOT layer classes. Loaded only when a tf_keras model is passed (or a TF-MOT model is loaded)."""
