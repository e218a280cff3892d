"""The pipeline's decisions, as plain functions the workers call: signing, submission, acknowledgment, callbacks."""
