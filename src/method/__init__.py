"""The method (SPEC §4–7): the encoder and its heads, Backward Search, the student, cosine
retrieval and the metrics. Pure computation on tensors; no stage, file layout or report here."""
