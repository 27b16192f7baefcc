"""Faithfulness of attribution maps: perturbation metrics, sanity checks, and the evaluate job."""
