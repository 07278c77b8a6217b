"""What both lessons share: synthetic data, metrics, network geometry, figures and safe file writes."""
