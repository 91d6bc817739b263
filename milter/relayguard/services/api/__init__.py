"""`relayguard api`: the HTTP send API (docs/api.md).

Applications POST a message (JSON or RFC 5322) with a token; the API hands it over SMTP to Postfix's
loopback `api` listener, so that the same source identification, policy, content checks, DKIM
signing and audit apply as for mail sent over SMTP.
"""
