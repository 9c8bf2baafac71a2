"""Planning survey instances from the study's schedule, in each participant's time zone."""
