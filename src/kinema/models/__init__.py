"""Networks and their shape contracts: the causal video VAE, the DiT and the text encoder."""
