"""The support desk: dead letters for escalation to СТП ЕГИСЗ, clinic onboarding, the pieces the console shows.

``deadletters`` (model, filters, masking, exports), ``reader`` (the DLT topics from the cluster), ``case``
(one document's attempts and kept exchanges), ``ticket`` (the Russian request to СТП), ``replay``
(resumable re-publishing), ``readiness`` (``emd clinic check``), ``onboarding`` (test and promote).
"""
