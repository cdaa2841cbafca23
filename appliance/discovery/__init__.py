"""Finding the other boxes (mDNS), knowing who is alive (heartbeats), and electing a coordinator."""
