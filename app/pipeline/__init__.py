"""The hot path of Arbiter, stage by stage: decode, dedupe, features, score, rules, act.

Every stage here is pure (plain data in, plain data out); consumers and stores call
them from the edges.
"""
