"""Studies (``gist-ray scale``): a grid of backbone x method x GIST x dataset x seed (x training-set size).

``spec`` (what a study and a cell are), ``load`` (the study file, validated), ``resume`` (finished cells from
MLflow), ``run`` (the sweep of the remaining cells, the study's MLflow run), ``analysis`` (fits, gains, tests,
tables and plots). The fitting maths is :mod:`gist_ray.scaling`.
"""
