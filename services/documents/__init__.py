"""СЭМД documents: hardened XML parsing, what a CDA says about itself, НСИ kinds, XSD/Schematron, the claim-check store."""
