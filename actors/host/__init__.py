"""The object host: runs the invocations routed to one host actor.

Modules: ``object_host`` (``ObjectHost``: key slots and inboxes, invocations, awakeables,
outbound calls and sends), ``flusher`` (group commit of journal records), ``loader``
(coalesced state loads), ``mailbox`` (batched submission, the host's side), ``actions``
(``ctx.run``'s sync actions on threads), ``watchdog`` (a blocked event loop, reported).
See docs/architecture.md.
"""
