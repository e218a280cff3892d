"""Local development tooling: a dev PKI and МЧД, the dev organisations file, the whole pipeline as child processes."""
