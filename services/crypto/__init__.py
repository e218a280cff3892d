"""GOST crypto: R 34.10-2012 and Streebog, keys, Russian certificates, CAdES-BES, the Signer interface, МЧД.

Importing the package installs OpenSSL's gost engine (``native``) as the accelerator of ``gost``'s signing and
verification: ``gost`` is the interface and the Python implementation, ``native`` the C one, and only this
package, above both, chooses.
"""

from services.crypto import gost, native

gost.use_accelerator(native)
