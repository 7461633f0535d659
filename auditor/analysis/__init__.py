"""Offline analysis: linking hops, chains, the redirect graph, the audit and its rules."""
