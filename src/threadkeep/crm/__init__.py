"""CRM sync. GoHighLevel: verified webhooks in, a durable, level-triggered outbox out.

``threadkeep.crm.ghl`` holds the wire format as pure functions, ``client`` the REST client and
``sync`` what goes through the store. Needs ``pip install 'threadkeep[crm]'`` (httpx,
tenacity, cryptography).
"""
