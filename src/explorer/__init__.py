"""The explorer (E3_explore.py): the paper's Figure 1, live in a browser — a query, its condition,
λ and a method, answered with the top-10 and the query's walk on a 2-D map of the database."""
