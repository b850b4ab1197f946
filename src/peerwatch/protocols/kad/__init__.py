"""Kad2 (eMule/aMule Kademlia over UDP), sans-IO: packets, routing table, iterative lookups.

See docs/kad.md. The reference is aMule's src/kademlia/ tree and src/include/protocol/kad2/.
"""
