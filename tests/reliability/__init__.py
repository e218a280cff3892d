"""The whole-system run (`make reliability`): harness, bad-input corpus, report (docs/reliability.md)."""
