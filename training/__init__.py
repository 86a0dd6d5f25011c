"""hop.training"""
