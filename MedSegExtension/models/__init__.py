"""Model cards (``model.json``), the registry of bundled and user models, weight loading."""
