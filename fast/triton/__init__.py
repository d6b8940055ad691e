"""fast/triton"""
