"""hop.bridges"""
