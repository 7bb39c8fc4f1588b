"""``mindlens.audit``: find a model's strategies across a scan store with Spectral
Relevance Analysis (Lapuschkin et al. 2019) and say where each one puts its evidence."""

from .audit import audit, audit_class, to_json
from .read import read_audit
from .spray import eigengap, knn_affinity, spectral_embedding, spray

__all__ = ["audit", "audit_class", "eigengap", "knn_affinity", "read_audit", "spectral_embedding",
           "spray", "to_json"]
