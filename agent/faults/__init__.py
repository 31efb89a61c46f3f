"""Faults the agent injects on behalf of a session, and undoes exactly.

One module per concern, behind one proto (the InjectFault/ListFaults/HealFault/
HealAll RPCs): journal.py (the durable record of each fault and its undo, written
before it is applied), manager.py (ids, timers, session binding, heal-on-start),
container.py (kill, stop, pause, restart through the engine), partition.py
(grudges as iptables chains), netns.py (nsenter + iptables helpers), and for PROXY
faults proxyfault.py (spec, placement, the live proxies), proxy.py (the asyncio TCP
proxy), toxics.py (what it does to connections) and netem.py (the kernel mechanism).
"""
