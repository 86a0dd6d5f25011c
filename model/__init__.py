"""hop.model"""
