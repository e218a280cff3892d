"""GOST crypto: R 34.10-2012 and Streebog, keys, Russian certificates, CAdES-BES, the Signer interface, МЧД."""
