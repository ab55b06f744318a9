"""enrolment-sync: mirrors a cohort's enrolments from the KVCA LMS into Postgres."""

__version__ = "0.1.0"
