"""textstream training job: data loading, model builders, clustering, evaluation, publishing."""
