"""DSKD: decoder sense-knowledge distillation (sense dictionary + lexical relations + hinge-MSE loss)."""
