"""Automatic source lock on anomalies: each source is compared with its own history.

`baseline` learns what a source usually does (in the state store, so every node learns together),
`detector` applies the rules to each decision and pulls the kill switch when a rule says `lock`.
The rules are the [anomaly] section (config/anomaly.py); docs/anomaly.md explains the learning and
the defaults.
"""
