"""Running models: device choice, sliding-window inference, the whole segmentation pipeline."""
