"""The support console (``emd console``): ``app`` (pages and JSON), ``auth`` (users, sessions, CSRF), ``index``
(the dead-letter topics, followed). docs/support.md describes it."""
