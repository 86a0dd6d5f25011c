"""hop.profiles"""
