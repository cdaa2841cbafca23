"""The NodeODM wire contract: status codes, reply shapes, option checks, uploads and a client."""
