"""A local provider simulator speaking the Anthropic, OpenAI and Gemini wire formats."""
from tokenaddons.sim.server import Received, Simulator, serve

__all__ = ["Received", "Simulator", "serve"]
