"""Tests of the example policies and the policy case-file runner."""
