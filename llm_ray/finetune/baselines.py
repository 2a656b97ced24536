"""Baselines on the same splits, with scikit-learn: the majority class, and TF-IDF + logistic
regression. (The third baseline, each model size trained on the labelled data alone, is a fine-tune
of a fresh body: llm_ray.finetune.model.build_classifier without weights.)
"""

from __future__ import annotations

import numpy as np

TFIDF_CS = (0.3, 1.0, 3.0, 10.0, 30.0)
"""Inverse regularisation strengths LogisticRegressionCV chooses from by 5-fold cross-validation
on the training split alone (the test split is never seen)."""


def majority_predictions(train_labels, n_test: int, seed: int = 0) -> tuple:
    """(predictions, parameter count 0): scikit-learn's DummyClassifier (`most_frequent`; on a balanced
    split that is the first class, i.e. chance)."""
    from sklearn.dummy import DummyClassifier

    clf = DummyClassifier(strategy="most_frequent").fit(np.zeros((len(train_labels), 1)), train_labels)
    return clf.predict(np.zeros((n_test, 1))), 0


def tfidf_logreg_predictions(train_texts, train_labels, test_texts, seed: int = 0) -> tuple:
    """(predictions, parameter count): TF-IDF over character 1-2-grams (Chinese has no spaces between
    words, and most of its words are one or two characters), then logistic regression with C chosen
    by cross-validation on the training split."""
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegressionCV
    from sklearn.pipeline import make_pipeline

    pipe = make_pipeline(TfidfVectorizer(analyzer="char", ngram_range=(1, 2), sublinear_tf=True, min_df=2),
                         LogisticRegressionCV(Cs=list(TFIDF_CS), cv=5, max_iter=2000, random_state=seed))
    pipe.fit(list(train_texts), list(train_labels))
    lr = pipe[-1]
    return pipe.predict(list(test_texts)), int(lr.coef_.size + lr.intercept_.size)
