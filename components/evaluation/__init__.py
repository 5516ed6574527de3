"""The evaluation stage's parts: prompt adherence, the label classifier, the promotion gate, the report."""
