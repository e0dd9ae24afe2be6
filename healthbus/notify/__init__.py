"""Notifications from transitions: grouped, resolved, at least once and never twice.

`healthbus notify --url URL` (or `[[healthbus.notify]]` tables, also run by `serve`) reads
the transitions stream through consumer groups of its own and sends through Apprise.
The modules, from pure to I/O: `plan` (what to say), `text` (how to say it), `store`
(markers and open incidents in Redis), `send` (Apprise), `runner` (one destination's loop),
`notifier` (all destinations).
"""

from __future__ import annotations

__all__: list[str] = []
