"""Training data: scanning folders, caption rules, aspect buckets, latent and text caches."""
