"""hop.engine"""
