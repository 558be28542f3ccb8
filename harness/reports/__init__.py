"""The reports stage: what people read of a race or of the claims matrix.

The race's own text table and JSON live with its outcomes (race/outcomes.py);
here are the matrix model and the HTML pages: the race page with its plots,
the matrix page, and the frame and style they share."""
