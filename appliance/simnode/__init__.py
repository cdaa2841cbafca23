"""A simulated NodeODM (like NodeODM's --test mode) for demos, training, benchmarks and tests."""

from appliance.simnode.app import create_simnode_app
from appliance.simnode.server import SimNode, serve_simnode
from appliance.simnode.settings import Faults, SimnodeSettings

__all__ = ["Faults", "SimNode", "SimnodeSettings", "create_simnode_app", "serve_simnode"]
