"""Reading and writing volumes, label maps and segmentation files."""
