"""``sluicegate mcp proxy``: an MCP gateway that governs any agent's tools without code changes.

The proxy (:class:`GovernedProxy`) serves MCP to the agent and is a client of the real server; every
``tools/call`` becomes an intent (:mod:`sluicegate.mcp.mapping`) decided by the workers before it reaches
the server. Needs the ``mcp`` extra: ``pip install 'sluicegate[mcp]'``.
"""

from sluicegate.mcp.mapping import MappingError, MappingFile, ToolMapper, ToolRule, load_mapping
from sluicegate.mcp.proxy import GovernedProxy
from sluicegate.mcp.runner import ProxyOptions, run_proxy
from sluicegate.mcp.transports import Upstream

__all__ = [
    "GovernedProxy",
    "MappingError",
    "MappingFile",
    "ProxyOptions",
    "ToolMapper",
    "ToolRule",
    "Upstream",
    "load_mapping",
    "run_proxy",
]
