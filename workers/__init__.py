"""The pipeline's stages: signer (created → signed), sender (signed → sent), status (sent → acknowledged)."""
